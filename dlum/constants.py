"""Names and numbers defined once (Xu et al., Breast Cancer Research 2025, "DL-UM")."""
from __future__ import annotations

from enum import StrEnum

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


class Split(StrEnum):
    """Where a row belongs: development splits of one centre, or ``external`` (a second centre,
    as the DL-UM paper's external test set)."""

    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"
    EXTERNAL = "external"


TRAIN, VALIDATION, TEST, EXTERNAL = Split.TRAIN, Split.VALIDATION, Split.TEST, Split.EXTERNAL
SPLITS = tuple(Split)
#: The splits of one development centre (patients split 7:1:2 before pairing).
DEVELOPMENT_SPLITS = (TRAIN, VALIDATION, TEST)
#: Splits whose rows no training step ever sees: results are reported on these.
HELD_OUT_SPLITS = (TEST, EXTERNAL)

#: One colour per model, the same on every figure (the dashboard's and the README's).
MODEL_COLORS = {
    "DL-UM": "#1f4e9c",
    "DL-U": "#2a9d8f",
    "DL-M": "#e07a1f",
    "DL-UM US branch": "#7f8c9a",
    "DL-UM MG branch": "#b0a089",
}


class Arch(StrEnum):
    """The three networks of the paper: the fusion and the two single-modality models."""

    DLUM = "dlum"
    DLU = "dlu"
    DLM = "dlm"

    @property
    def modalities(self) -> tuple[str, ...]:
        """The images the network reads, in the order it takes them."""
        return {"dlum": (US, MG), "dlu": (US,), "dlm": (MG,)}[self.value]

    @property
    def title(self) -> str:
        return {"dlum": "DL-UM", "dlu": "DL-U", "dlm": "DL-M"}[self.value]


class Mode(StrEnum):
    """What one prediction read: both images (fused), or one image alone (that branch's head)."""

    PAIR = "pair"
    US_ONLY = "us-only"
    MG_ONLY = "mg-only"

    @classmethod
    def of(cls, has_us: bool, has_mg: bool) -> "Mode":
        if has_us and has_mg:
            return cls.PAIR
        if has_us:
            return cls.US_ONLY
        if has_mg:
            return cls.MG_ONLY
        raise ValueError("a prediction needs at least one image")


class Precision(StrEnum):
    """Precision of probabilities: ``auto`` picks bf16 where it is native (``dlum.runtime``)."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"


class CamMethod(StrEnum):
    """Class activation map methods offered (pytorch-grad-cam's names). Each costs one forward
    and one backward pass, bounded at 224². Eigen-CAM is not offered: pytorch-grad-cam takes a
    full SVD of each block's (H·W)-column activation matrix, whose left factor for block 1 at 224²
    is 50,176 × 50,176 (about 19 GiB)."""

    GRAD_CAM = "Grad-CAM"
    GRAD_CAM_PP = "Grad-CAM++"
    XGRAD_CAM = "XGrad-CAM"
    HIRES_CAM = "HiResCAM"
    LAYER_CAM = "LayerCAM"

#: Pre-processing: ROI expanded by 30% of its shortest side (15% per side), then 224x224.
ROI_EXPANSION = 0.30
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Default largest image (in pixels) the decoder accepts (``DLUM_MAX_PIXELS`` overrides it): a
#: guard against decompression bombs. Full-field mammograms are about 3.3k x 4.1k = 13.6 Mpx and
#: digitised films up to about 25 Mpx. Decoding a 30 Mpx image peaks at about 0.75 GiB (a 16-bit
#: DICOM through rescale and window in float64), under the 1 GiB the project allows per input.
MAX_PIXELS = 30_000_000

#: VGG19 layout: convolutions per block and filters per block.
VGG19_BLOCKS = (2, 2, 4, 4, 4)
VGG_FILTERS = (64, 128, 256, 512, 512)
N_BLOCKS = len(VGG19_BLOCKS)

#: Default operating threshold on P(malignant) when a checkpoint card gives none.
DEFAULT_THRESHOLD = 0.5

#: The research-use disclaimer every page and the PDF case report show (Markdown bold).
DISCLAIMER = (
    "**For research use only.** Not a medical device and not for clinical decisions. "
    "The shipped model was trained on public single-modality datasets paired across different "
    "women (pseudo-pairs); its outputs describe that demonstration cohort, not your patients."
)
