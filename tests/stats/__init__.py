"""Tests of dlum.stats (a package so that test module names cannot clash with other folders)."""
