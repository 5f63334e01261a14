"""A corpus of malformed and hostile inputs, generated here, for the bad-input tests.

Each :class:`Case` is one thing a user can get wrong: an image, a lesion box, a checkpoint, an
option, a table or a setting. :func:`build` writes every file a case needs under one folder and
returns the cases with the command line that feeds the bad input to ``python -m dlum`` and a
phrase the error message must hold. ``upload`` is set for image cases that can also be uploaded
on Case Review, ``home`` for checkpoint cases that the dashboard loads.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests.app.uploads import dicom_without_pixels, png_bytes, png_header_only

__all__ = ["Case", "Corpus", "bad_images", "build", "dicom_bytes", "snapshot"]


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` for ``python -m dlum``, the ``phrase`` its message must hold."""

    name: str
    kind: str
    argv: tuple[str, ...]
    phrase: str
    env: dict[str, str] = field(default_factory=dict)
    upload: bytes | None = None  # the same bad image, uploaded on Case Review
    home: Path | None = None  # a bad checkpoint the dashboard is pointed at
    exit_code: int = 2


@dataclass
class Corpus:
    root: Path
    cases: list[Case]

    def by_kind(self, kind: str) -> list[Case]:
        return [c for c in self.cases if c.kind == kind]


def dicom_bytes(rows: int = 64, columns: int = 64, *, pixels: np.ndarray | None = None,
                deflate: bool = False, slope: float | None = None, **extra) -> bytes:
    """A small MONOCHROME2 DICOM (16-bit), optionally with a deflated data set."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian if deflate else ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, 0
    for key, value in extra.items():
        setattr(ds, key, value)
    if pixels is None:
        pixels = np.random.default_rng(0).integers(0, 4096, (rows, columns), dtype=np.uint16)
    ds.PixelData = np.asarray(pixels, dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _deflate_bomb() -> bytes:
    """A DICOM of about 1 MB whose deflated data set inflates to about 1 GiB of zeros."""
    side = 23_000
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = side, side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(2 * side * side)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(array)
    if mode:
        img = img.convert(mode)
    img.save(buf, format="PNG")
    return buf.getvalue()


def _image(array, fmt: str, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(array)
    if mode:
        img = img.convert(mode)
    img.save(buf, format=fmt)
    return buf.getvalue()


def bad_images(good: np.ndarray) -> dict[str, tuple[str, bytes, str]]:
    """name -> (file name, bytes, phrase) of images that must be refused with a message."""
    good_png = png_bytes(good)
    nan_tiff = good.astype(np.float32)
    nan_tiff[3, 3] = np.nan
    corrupt_dicom = b"\0" * 128 + b"DICM" + os.urandom(64)
    return {
        "empty file": ("empty.png", b"", "empty"),
        "text named png": ("notes.png", b"patient notes, not an image\n" * 4, "not a recognised image"),
        "truncated png": ("cut.png", good_png[: len(good_png) // 2], "truncated"),
        "png header of 90 Mpx": ("bomb.png", png_header_only(10_000, 9_000), "pixel limit"),
        "png header of 4 billion px": ("huge.png", png_header_only(65_535, 65_535), "pixel limit"),
        "png 0 px wide": ("zero.png", png_header_only(0, 10), ""),
        "1-bit png": ("mask.png", _png(good, "1"), "1-bit"),
        "cmyk jpeg": ("cmyk.jpg", _image(good, "JPEG", "CMYK"), "CMYK"),
        "gif": ("anim.gif", _image(good, "GIF"), "unsupported image format GIF"),
        "zip archive": ("scan.png", b"PK\x03\x04" + bytes(200), "not a recognised image"),
        "all-black png": ("black.png", png_bytes(np.zeros((64, 64), np.uint8)), "constant"),
        "all-white png": ("white.png", png_bytes(np.full((64, 64), 255, np.uint8)), "constant"),
        "1x1 png": ("dot.png", png_bytes(np.full((1, 1), 7, np.uint8)), "constant"),
        "float tiff with NaN": ("nan.tiff", _image(nan_tiff, "TIFF"), "NaN"),
        "dicom without pixels": ("header.dcm", dicom_without_pixels(), "no pixel data"),
        "dicom rescale slope 0": ("flat.dcm", dicom_bytes(slope=0.0), "constant"),
        "dicom of 0 rows": ("rows0.dcm", dicom_bytes(0, 64, pixels=np.zeros((0, 64))), "no pixels"),
        "dicom truncated pixels": ("short.dcm", dicom_bytes()[:-3000], "cannot be decoded"),
        "dicom garbage after preamble": ("garbage.dcm", corrupt_dicom, "DICOM"),
        "dicom with a bad photometric": ("ybr.dcm", dicom_bytes(PhotometricInterpretation="HSV"),
                                         "photometric"),
        "deflated dicom inflating to 1 GiB": ("bomb.dcm", _deflate_bomb(), "inflates to over"),
    }


def _checkpoint_variants(source: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a damaged copy of the checkpoint ``source``, phrase)."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from tests.checkpoints import copy_with_nan_weights

    def copy(name: str, *, weights: bool = False) -> Path:
        """A copy of the card; the weights copied when the case changes them, else linked."""
        target = root / "checkpoints" / name.replace(" ", "-")
        target.mkdir(parents=True)
        shutil.copy2(source / "card.json", target / "card.json")
        if weights:
            shutil.copy2(source / "model.safetensors", target / "model.safetensors")
        else:
            (target / "model.safetensors").symlink_to(source / "model.safetensors")
        return target

    def edit_card(name: str, change) -> Path:
        target = copy(name)
        card = json.loads((target / "card.json").read_text())
        change(card)
        (target / "card.json").write_text(json.dumps(card))
        return target

    def set_input_size(value):
        return lambda card: card["input"].__setitem__("size", value)

    def set_threshold(value):
        return lambda card: card["operating_point"]["thresholds_per_model"].__setitem__("p_dlum", value)

    out: dict[str, tuple[Path, str]] = {}
    out["missing folder"] = (root / "checkpoints" / "not-there", "found")
    target = copy("no weights")
    (target / "model.safetensors").unlink()  # the link only
    out["no weights"] = (target, "model.safetensors")
    target = copy("truncated weights")
    (target / "model.safetensors").unlink()
    (target / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes()[:1000])
    out["truncated weights"] = (target, "not a readable safetensors file")
    target = copy("weights are a pickle")
    (target / "model.safetensors").unlink()
    (target / "model.safetensors").write_bytes(b"\x80\x04\x95" + bytes(64))
    out["weights are a pickle"] = (target, "not a readable safetensors file")
    target = copy("card not json")
    (target / "card.json").write_text('{"name": ')
    out["card not json"] = (target, "not valid JSON")
    target = copy("card a list")
    (target / "card.json").write_text("[1, 2]")
    out["card a list"] = (target, "card.json")
    target = copy("no card")
    (target / "card.json").unlink()
    out["no card"] = (target, "card.json")
    out["input size 100000"] = (edit_card("input size 100000", set_input_size(100000)), "input.size")
    out["input size abc"] = (edit_card("input size abc", set_input_size("abc")), "input.size")
    out["input size 0"] = (edit_card("input size 0", set_input_size(0)), "input.size")
    out["threshold high"] = (edit_card("threshold high", set_threshold("high")), "not a number")
    out["threshold 7"] = (edit_card("threshold 7", set_threshold(7)), "p_dlum")
    out["unknown arch"] = (edit_card("unknown arch", lambda c: c.__setitem__("arch", "resnet")),
                           "arch")
    out["model config wrong"] = (
        edit_card("model config wrong", lambda c: c["model"].__setitem__("blocks", [1])), "")
    target = copy("alias to a missing tensor", weights=True)
    weights = target / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        meta = dict(f.metadata() or {})
    state = load_file(str(weights))
    meta["aliases"] = json.dumps({"us.extra.weight": "no.such.tensor"})
    save_file(state, str(weights), metadata=meta)
    out["alias to a missing tensor"] = (target, "does not hold")
    target = copy("weights of another network")
    (target / "model.safetensors").unlink()
    state = load_file(str(source / "model.safetensors"))
    first = sorted(state)[0]
    save_file({first: state[first]}, str(target / "model.safetensors"),
              metadata={"format": "dlum"})
    out["weights of another network"] = (target, "do not fit")
    out["nan weights"] = (copy_with_nan_weights(source, root / "checkpoints" / "nan-weights"),
                          "damaged")
    return out


def _tables(root: Path, us: Path, mg: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a bad cohort table, phrase)."""
    folder = root / "tables"
    folder.mkdir()
    head = "case_id,patient_id,us_image,mg_image,label"
    good_row = f"c1,p1,{us},{mg},1"

    def table(name: str, text: str | bytes) -> Path:
        path = folder / f"{name.replace(' ', '-')}.csv"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    out = {
        "empty table": (table("empty", ""), "empty"),
        "header only": (table("header only", head + "\n"), "no rows"),
        "binary with NUL": (table("binary", b"case_id\x00\x01\x02\n" * 10), "NUL"),
        "latin-1 bytes": (table("latin", (head + "\nc1,Ma\xefa,x,y,1\n").encode("latin-1")),
                          "not UTF-8"),
        "extra cell on first row": (table("extra", f"{head}\n{good_row},surplus\n"), "cells"),
        "repeated header": (table("repeat", f"{head},label\n{good_row},1\n"), "times in the header"),
        "label typo": (table("typo", f"{head}\nc1,p1,{us},{mg},malignnat\n"), "malignnat"),
        "no label column": (table("nolabel", "case_id,patient_id,us_image,mg_image\nc1,p1,a,b\n"),
                            "missing required column"),
        "missing images": (table("missing", f"{head}\nc1,p1,/nowhere/u.png,/nowhere/m.png,1\n"),
                           "not found"),
        "malformed box": (table("box", f"{head},us_x0,us_y0,us_x1,us_y1\n{good_row},1,2,abc,9\n"),
                          "us_x1"),
        "inverted box": (table("inverted", f"{head},us_x0,us_y0,us_x1,us_y1\n{good_row},9,9,2,2\n"),
                         ""),
        "unknown split": (table("split", f"{head},split\n{good_row},tset\n"), "tset"),
    }
    rows = "".join(f"c{i},p{i},/nowhere/{i}.png,/nowhere/{i}m.png,1\n" for i in range(3000))
    out["3000 rows, every image missing"] = (table("allmissing", head + "\n" + rows), "more")
    return out


def build(root: Path, checkpoint: Path) -> Corpus:
    """Write the corpus under ``root`` for the (small, valid) DL-UM ``checkpoint``."""
    from dlum.data.examples import write_phantom_pair

    root.mkdir(parents=True, exist_ok=True)
    pair = write_phantom_pair(root / "good")
    us, mg = Path(pair["us"]), Path(pair["mg"])
    box = ",".join(str(int(v)) for v in pair["us_box"])
    ck = str(checkpoint)
    predict = ("predict", "--checkpoint", ck, "--precision", "fp32")
    cases: list[Case] = []

    # images, as --mg (whole image confirmed) and as uploads on Case Review
    image_dir = root / "images"
    image_dir.mkdir()
    grey = np.asarray(Image.open(us).convert("L"))
    for name, (file_name, data, phrase) in bad_images(grey).items():
        path = image_dir / file_name
        path.write_bytes(data)
        cases.append(Case(name, "image", (*predict, "--us", str(us), "--us-roi", box,
                                          "--mg", str(path), "--whole-image"), phrase, upload=data))
    fifo = image_dir / "pipe.png"
    os.mkfifo(fifo)
    cases += [
        Case("a FIFO as an image", "image", (*predict, "--us", str(fifo)), "not a regular file"),
        Case("a folder as an image", "image", (*predict, "--us", str(image_dir)), "folder"),
        Case("a device as an image", "image", (*predict, "--us", "/dev/zero"), "not a regular file"),
        Case("a missing image", "image", (*predict, "--us", str(root / "nope.png")), "not found"),
        Case("an image over the file-size limit", "image",
             (*predict, "--us", str(us), "--us-roi", box), "image file limit",
             env={"DLUM_MAX_IMAGE_MB": "1"} if us.stat().st_size > 2**20 else {}),
    ]
    if not cases[-1].env:  # the phantom is small: make a file over a 1 MiB bound
        big = image_dir / "big.png"
        big.write_bytes(png_bytes(np.random.default_rng(1).integers(0, 255, (1200, 1200),
                                                                     dtype=np.uint8)))
        cases[-1] = Case("an image over the file-size limit", "image",
                         (*predict, "--us", str(big), "--whole-image"), "image file limit",
                         env={"DLUM_MAX_IMAGE_MB": "1"})

    # lesion boxes
    for name, roi, phrase in (("box not four numbers", "10,10,abc", "4 numbers"),
                              ("box inverted", "100,100,10,10", "inverted"),
                              ("box outside the image", "5000,5000,6000,6000", "outside the image"),
                              ("box with NaN", "nan,1,20,30", ""),
                              ("box with five numbers", "1,2,3,4,5", "4 numbers")):
        cases.append(Case(name, "roi", (*predict, "--us", str(us), "--us-roi", roi), phrase))

    # checkpoints
    for name, (path, phrase) in _checkpoint_variants(checkpoint, root).items():
        cases.append(Case(f"checkpoint: {name}", "checkpoint",
                          ("predict", "--checkpoint", str(path), "--us", str(us), "--us-roi", box),
                          phrase, home=path))
    cases.append(Case("a DL-UM checkpoint given as --dlu", "checkpoint",
                      ("evaluate", "--checkpoint", ck, "--cohort", "{table}", "--out",
                       str(root / "out" / "p.csv"), "--dlu", ck, "--quiet"), "DL-U"))

    # options and outputs
    out_dir = root / "out"
    out_dir.mkdir()
    taken = out_dir / "taken.csv"
    taken.write_text("keep me\n")
    cam_file = out_dir / "cam.png"
    cam_file.write_bytes(b"keep")
    cam_dir = out_dir / "cams"
    cam_dir.mkdir()
    (cam_dir / "us_block1.png").write_bytes(b"keep")
    readme = out_dir / "README.md"
    readme.write_text("# no markers here\n")
    table = root / "good" / "cohort.csv"
    rows = []
    for i, split in enumerate(["train", "train", "validation", "validation"]):
        case = write_phantom_pair(root / "good", seed=100 + i, malignant=bool(i % 2))
        rows.append(f"c{i},p{i},{case['us']},{case['mg']},{i % 2},{split}\n")
    table.write_text("case_id,patient_id,us_image,mg_image,label,split\n" + "".join(rows))
    evaluate = ("evaluate", "--checkpoint", ck, "--cohort", str(table), "--quiet", "--out")
    train = ("train", "--cohort", str(table), "--quiet", "--out", str(out_dir / "run"))
    held_no_split = out_dir / "held_no_split.csv"
    held_no_split.write_text("case_id,label,p_dlum\nc1,1,0.4\nc2,0,0.3\n")
    held_one_class = out_dir / "held_one_class.csv"
    held_one_class.write_text("case_id,label,split,p_dlum\nc1,1,validation,0.4\n"
                              "c2,1,validation,0.6\nc3,0,test,0.2\nc4,1,test,0.7\n")
    resume = out_dir / "resume"
    resume.mkdir()
    from safetensors.numpy import save_file

    save_file({"model.x": np.zeros(2, np.float32)}, str(resume / "last_state.safetensors"))
    cases += [
        Case("--cam into an existing file", "option", (*predict, "--us", str(us), "--us-roi", box,
                                                       "--cam", str(cam_file)), "not a folder"),
        Case("--cam into /proc", "option", (*predict, "--us", str(us), "--us-roi", box,
                                            "--cam", "/proc/dlum-cams"), "CAM folder"),
        Case("--cam into a folder holding CAMs", "option",
             (*predict, "--us", str(us), "--us-roi", box, "--cam", str(cam_dir)), "--force"),
        Case("evaluate --out a folder", "option", (*evaluate, str(out_dir)), "is a folder"),
        Case("evaluate --out the cohort", "option", (*evaluate, str(table)), "also an input"),
        Case("evaluate --out an existing file", "option", (*evaluate, str(taken)), "--force"),
        Case("evaluate --out into a missing folder", "option",
             (*evaluate, str(out_dir / "no" / "p.csv")), "does not exist"),
        Case("evaluate --batch-size 0", "option", (*evaluate, str(out_dir / "b.csv"),
                                                   "--batch-size", "0"), "batch"),
        Case("train --lr nan", "option", (*train, "--lr", "nan"), "lr"),
        Case("train --batch-size 0", "option", (*train, "--batch-size", "0"), "batch"),
        Case("train --fold 7 of 4 rows", "option", (*train, "--fold", "7", "--folds", "4"), "fold"),
        Case("train --out an existing checkpoint", "option",
             ("train", "--cohort", str(table), "--quiet", "--out", ck), "--force"),
        Case("train: damaged resume state", "option",
             ("train", "--cohort", str(table), "--quiet", "--out", str(resume), "--epochs", "1",
              "--recipe", "paper", "--force"), "resume"),
        Case("prepare --out an existing file", "option",
             ("prepare", "--data", str(root), "--out", str(taken)), "not a folder"),
        Case("report --readme without markers", "option",
             ("report", "--checkpoint", ck, "--readme", str(readme)), "markers"),
        Case("report --held-out without a split column", "option",
             ("report", "--checkpoint", ck, "--held-out", str(held_no_split)), "split"),
        Case("report --held-out with one class in validation", "option",
             ("report", "--checkpoint", ck, "--held-out", str(held_one_class)), "validation"),
        Case("predict with no image", "option", predict, "--us"),
    ]

    # tables
    for name, (path, phrase) in _tables(root, us, mg).items():
        cases.append(Case(f"table: {name}", "table", (*evaluate[:4], str(path), "--quiet", "--out",
                                                      str(out_dir / "t.csv")), phrase))
    cases += [
        Case("table: a folder", "table", (*evaluate[:4], str(out_dir), "--quiet", "--out",
                                          str(out_dir / "t.csv")), "folder"),
        Case("table: a FIFO", "table", (*evaluate[:4], str(fifo), "--quiet", "--out",
                                        str(out_dir / "t.csv")), "not a regular file"),
        Case("table: over the row limit", "table", (*evaluate[:4], str(table), "--quiet", "--out",
                                                    str(out_dir / "t.csv")), "DLUM_MAX_TABLE_ROWS",
             env={"DLUM_MAX_TABLE_ROWS": "2"}),
        Case("table: over the size limit", "table", (*evaluate[:4], str(table), "--quiet", "--out",
                                                     str(out_dir / "t.csv")), "DLUM_MAX_TABLE_MB",
             env={"DLUM_MAX_TABLE_MB": "1"} if table.stat().st_size > 2**20 else
             {"DLUM_MAX_TABLE_MB": "0"}),
    ]

    # settings
    for env, phrase in (({"DLUM_MAX_PIXELS": "many"}, "DLUM_MAX_PIXELS"),
                        ({"DLUM_MAX_PIXELS": "0"}, "DLUM_MAX_PIXELS"),
                        ({"DLUM_MAX_IMAGE_MB": "-5"}, "DLUM_MAX_IMAGE_MB"),
                        ({"DLUM_MAX_TABLE_ROWS": "1e9"}, "DLUM_MAX_TABLE_ROWS")):
        cases.append(Case(f"setting {next(iter(env.items()))}", "setting",
                          (*predict[:3], "--us", str(us), "--us-roi", box), phrase, env=env))
    for env in ({"DLUM_PRECISION": "fp8"}, {"DLUM_COMPILE": "maybe"}, {"DLUM_MAX_PROBLEMS": "x"}):
        name = next(iter(env))
        cases.append(Case(f"setting {name}={env[name]} (info)", "setting", ("info",), name,
                          env=env))
    cases = [Case(c.name, c.kind, tuple(a.replace("{table}", str(table)) for a in c.argv),
                  c.phrase, c.env, c.upload, c.home, c.exit_code) for c in cases]
    return Corpus(root, cases)


_HASHES: dict[tuple, str] = {}


def snapshot(*folders: Path) -> dict[str, str]:
    """sha256 of every regular file under ``folders`` (links, FIFOs and devices skipped).

    A file's hash is remembered by (path, inode, size, modification time in ns): any write
    changes the time, so the file is hashed again; an untouched one is not re-read.
    """
    import hashlib

    seen: dict[str, str] = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            st = path.stat()
            key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
            if key not in _HASHES:
                _HASHES[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            seen[str(path)] = _HASHES[key]
    return seen

