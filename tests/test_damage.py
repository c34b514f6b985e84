import numpy as np
import torch

from labelfix.train.damage import background_cells, random_blocks


def test_random_blocks_cover_about_the_share_asked():
    m = random_blocks(4, 64, 80, 0.3, torch.Generator().manual_seed(0))
    assert m.shape == (4, 64, 80)
    assert all(0.3 <= float(x.float().mean()) < 0.7 for x in m)


def test_background_cells_are_the_most_background_half():
    # an object in the top-left quarter of a 4 x 4 grid: the 8 cells chosen are all background
    label = np.zeros((40, 40), np.int64)
    label[:20, :20] = 3
    label[0, 39] = -1  # unlabelled counts as background
    cells = background_cells(label, 0, grid=4, ratio=0.5)
    assert cells.sum() == 8 * 100
    assert not cells[:20, :20].any()
    # 12 cells are all background; ties keep row-major order: the top-right quarter, then the third row
    assert cells[:20, 20:].all() and cells[20:30].all() and not cells[30:].any()
