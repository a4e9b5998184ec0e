"""Class lists of the datasets the project trains on (names and colours; ids are positions)."""

# CamVid 11-class (SegNet) order, followed by Parking which the project paints onto training
# images (issue #6). Colours: CamVid's own palette; Parking uses Cityscapes' parking colour.
CAMVID_CLASSES = (
    ("Sky", (128, 128, 128)),
    ("Building", (128, 0, 0)),
    ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)),
    ("Pavement", (60, 40, 222)),
    ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)),
    ("Fence", (64, 64, 128)),
    ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)),
    ("Bicyclist", (0, 128, 192)),
)
CAMVID_IGNORE_ID = 11
PARKING = ("Parking", (250, 170, 160))
CAMVID_PARKING_CLASSES = CAMVID_CLASSES + (PARKING,)

# The default model's classes (issue #33): Cityscapes' 19 train ids in their order, then Parking
# in the 20th output (the pretrained ESPNetv2 weights' unused background channel).
CITYSCAPES_PARKING = "cityscapes_parking"

# What a CamVid label says in those classes: the Cityscapes classes it may be (CamVid's classes
# are coarser: its Car is also truck, bus and train; its Bicyclist the rider with the bicycle or
# motorcycle). A label of more than one class is a partial label; training takes the one the
# pretrained Cityscapes model finds likeliest among them (core/training/refine.py).
CAMVID_TO_CITYSCAPES = {
    "Sky": ("sky",), "Building": ("building", "wall"), "Pole": ("pole",), "Road": ("road",),
    "Pavement": ("sidewalk",), "Tree": ("vegetation", "terrain"),
    "SignSymbol": ("traffic light", "traffic sign"), "Fence": ("fence",),
    "Car": ("car", "truck", "bus", "train"), "Pedestrian": ("person",),
    "Bicyclist": ("rider", "bicycle", "motorcycle"), "Parking": ("parking",),
}
# and back, to score a Cityscapes-class model on CamVid's 11 classes (Parking as CamVid's Road)
CITYSCAPES_TO_CAMVID = {cs: camvid for camvid, many in CAMVID_TO_CITYSCAPES.items() for cs in many}
