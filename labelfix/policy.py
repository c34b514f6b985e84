"""What labelfix may change, what it sends to review, and what a bank must show to use a stage: the
decision thresholds of repair and of a bank's calibration, in one place. (Engineering limits, such as memory
bounds and block sizes, stay beside the code they bound.)"""

# repair

# blind fill: a labelled pixel takes a new class only where the model is at least this sure of it. VOC val,
# bundled bank (its models averaged), 256 px (repair_quality), mIoU with the undamaged pixels changed:
# forgotten objects 47.9 (0.95%), dropped objects 69.8 (0.88%), blocks set to background 87.2 (0.33%);
# at 0.55: 47.1 (0.89%) / 69.7 (0.84%) / 87.2 (0.33%); at 0.62: 45.8 (0.80%) / 69.5 (0.78%) / 87.2 (0.32%)
OVERTURN_CONFIDENCE = 0.5

# blind fill: the background within this share of the label's longer side of what the outlines show erased
# (repair/erasure.py `find_erasures`) is decided with it, as missing: an erased object reaches past the columns its
# cut edges show. VOC val, bundled bank, blocks set to background (repair_quality): 84.8 mIoU with 0.03% of the
# undamaged pixels changed without a margin, 86.8 / 0.13% at 0.02, 87.0 / 0.20% at 0.03, 86.8 / 0.35% at 0.04;
# at 500 px, 83.8 / 0.04% without and 85.4 / 0.27% at 0.03
ERASURE_MARGIN = 0.03

# blind fill: background inside an orphaned outline (repair/erasure.py `orphaned_interiors`) takes the object
# class the model finds likeliest there when the model's mean object probability over it reaches this. VOC val,
# bundled bank, 256 px, half the objects set to background with their outline kept (repair_quality): the
# outline unread 45.9 mIoU over them with 1.02% of the undamaged pixels changed; the interiors decided as missing
# by the model alone 57.2 / 0.29%; named at 0.4: 71.0 / 0.91%, at 0.5: 70.8 / 0.86%, at 0.6: 69.8 / 0.55%
NAME_LOST_OBJECT_BELIEF = 0.6

# a label whose changes (outline fills aside) are less sure than this on average needs review
# (RepairSettings.review_below)
REVIEW_BELOW = 0.7

# a label with this share of its outline orphaned (background on both sides) needs review
REVIEW_ORPHANED = 0.3

# calibration (labelfix train)

# % of undamaged pixels a blind setting may change on the calibration labels; below the 1% we promise,
# since 64 labels estimate it loosely (VOC: 1.98% on all val labels was 2.09% on the held-out ones)
BLIND_CHANGE_LIMIT = 0.75

# mIoU a repair mode must gain on the validation labels to use the boundary refiner: more than 64 labels' noise
# (VOC, bundled bank: missing +1.3, replace +0.9, blind +0.04)
REFINER_MIN_GAIN = 0.25

# mIoU a repair mode must gain to use the refiner's second pass, which costs as much again (VOC, 500 px,
# `--missing`: 8% of the whole command's throughput; bundled bank: replace +2.46 kept, missing +0.29 not,
# though all 289 val labels confirm it there: blocks +0.3, cells +1.1 mIoU)
REFINER_SECOND_MIN_GAIN = 1.0
