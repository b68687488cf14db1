"""Lesion codes, their display names, which are malignant, and chart colours.

Imports nothing of ours: every other module may use it.
"""

# HAM10000 diagnosis codes in the order the lesion-type model emits them.
LESION_CODES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

# By the usual HAM10000 convention actinic keratoses / intraepithelial carcinoma, basal cell carcinoma and
# melanoma count as malignant; the rest as benign.
MALIGNANT_CODES = frozenset({"akiec", "bcc", "mel"})

MALIGNANCY_LABELS = ("benign", "malignant")

# The data sources of the packages' evaluations, as pages, cards and reports name them; an unknown one shows as
# itself.
SOURCE_NAMES = {"ham10000": "HAM10000", "isic2017": "ISIC 2017", "clinical": "clinical photos"}

# What a layperson reads first, then the medical term.
DISPLAY_NAMES = {
    "akiec": "Sun-damage patch (actinic keratosis or Bowen's disease)",
    "bcc": "Basal cell carcinoma (a skin cancer)",
    "bkl": "Benign keratosis (such as an age spot)",
    "df": "Dermatofibroma (a harmless firm bump)",
    "mel": "Melanoma (a skin cancer)",
    "nv": "Mole (melanocytic nevus)",
    "vasc": "Blood-vessel spot (vascular lesion)",
    "benign": "Benign",
    "malignant": "Malignant",
    # the lesion check's labels: the image domains, and the older two-label check's positive label
    "dermoscopy": "Dermoscopy image",
    "clinical": "Ordinary photo",
    "not_lesion": "Not a skin-lesion close-up",
    "lesion": "Skin-lesion close-up",
}

# A few words, where space is short (the centre of a chart).
SHORT_NAMES = {
    "akiec": "sun-damage patch",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "mole",
    "vasc": "blood-vessel spot",
}

DESCRIPTIONS = {
    "akiec": "Sun-damage lesions (actinic keratosis, Bowen's disease) that can progress to squamous cell carcinoma.",
    "bcc": "The most common skin cancer; grows slowly and rarely spreads, but needs treatment.",
    "bkl": "Seborrhoeic keratoses, solar lentigines and lichen-planus-like keratoses: benign.",
    "df": "A firm benign nodule of the skin's connective tissue.",
    "mel": "A cancer of pigment cells; the most dangerous common skin cancer when found late.",
    "nv": "An ordinary mole: a benign growth of pigment cells.",
    "vasc": "Benign blood-vessel lesions such as cherry angiomas and pyogenic granulomas.",
}

MALIGNANT_COLOUR = "#F28E2B"  # orange
BENIGN_COLOUR = "#4E79A7"  # blue
OTHER_COLOUR = "#BAB0AC"  # grey, for the grouped remainder of a top-k chart
LESION_COLOURS = {
    "akiec": "#E15759",
    "bcc": "#F28E2B",
    "bkl": "#76B7B2",
    "df": "#59A14F",
    "mel": "#B07AA1",
    "nv": "#4E79A7",
    "vasc": "#EDC948",
}


def display_name(code: str) -> str:
    """A label as pages show it: a lesion type in plain words, then its medical name ("Mole (melanocytic nevus)");
    any other known label by its name ("Malignant", "Ordinary photo"); an unknown code as itself."""
    return DISPLAY_NAMES.get(code, code)


def short_name(code: str) -> str:
    """A lesion type in a few words ("mole"); any other label as display_name gives it."""
    return SHORT_NAMES.get(code, display_name(code))


def colour(code: str) -> str:
    """Chart colour for a label code (grey for unknown codes)."""
    if code == "malignant":
        return MALIGNANT_COLOUR
    if code == "benign":
        return BENIGN_COLOUR
    return LESION_COLOURS.get(code, OTHER_COLOUR)
