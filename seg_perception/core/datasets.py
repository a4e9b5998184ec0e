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
