"""Names and numbers defined once (Xu et al., Breast Cancer Research 2025, "DL-UM")."""
from __future__ import annotations

#: The two modalities, in the order the network takes them.
US = "us"
MG = "mg"
MODALITIES = (US, MG)
MODALITY_NAMES = {US: "Ultrasound", MG: "Mammography"}

#: Pathology labels: 0 = benign, 1 = malignant (the positive class).
BENIGN = "benign"
MALIGNANT = "malignant"
LABELS = (BENIGN, MALIGNANT)

#: BI-RADS assessment categories kept in the study (0, 1 and 6 are excluded).
BIRADS_LEVELS = (2, 3, 4, 5)
BIRADS_SUSPICIOUS = (4, 5)  # biopsy recommended
BIRADS_PROBABLY_BENIGN = (2, 3)  # follow-up

#: Subgroups: discordant when one modality says 4-5 and the other 2-3.
ALL = "all"
CONCORDANT = "concordant"
DISCORDANT = "discordant"
UNDETERMINED = "undetermined"
SUBGROUPS = (ALL, CONCORDANT, DISCORDANT)

#: Pairings recorded in a cohort table.
SAME_PATIENT = "same_patient"
PSEUDO = "pseudo"
PAIRINGS = (SAME_PATIENT, PSEUDO)

#: ``source`` of generated phantom cases: never mixed with real cases in one table or metric.
SYNTHETIC_SOURCE = "synthetic-phantom"

#: Splits.
TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)

#: Pre-processing: ROI expanded by 30% of its shortest side (15% per side), then 224x224.
ROI_EXPANSION = 0.30
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Largest image (in pixels) the decoder accepts: a guard against decompression bombs.
#: Full-field digitised mammograms are about 4.6k x 2.8k = 13 Mpx; 80 Mpx leaves room.
MAX_PIXELS = 80_000_000

#: VGG19 layout: convolutions per block and filters per block.
VGG19_BLOCKS = (2, 2, 4, 4, 4)
VGG_FILTERS = (64, 128, 256, 512, 512)
N_BLOCKS = len(VGG19_BLOCKS)

#: Default operating threshold on P(malignant) when a checkpoint card gives none.
DEFAULT_THRESHOLD = 0.5
