"""The label-map figure: heat maps in the image's orientation, and names drawn as plain text."""
import numpy as np
import torch
from PIL import Image

from timm_multilabel.relabel.show import render_label_map


def test_class_names_with_mathtext_are_drawn_as_text(tmp_path):
    scores = torch.tensor([[[3.0, 1.0], [1.0, 1.0]], [[0.5, 2.0], [0.5, 0.5]]])  # [K=2, H=2, W=2]
    classes = torch.tensor([[[0, 0], [0, 0]], [[1, 1], [1, 1]]])
    image = Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8))
    names = ['$\\frac{$', 'price in $ and % _x^2']
    fig, rows = render_label_map(image, scores, classes, class_names=names, topk=2, title='a $b$ file.jpg')
    fig.savefig(tmp_path / 'map.png')  # laying out the text is where mathtext would fail
    assert (tmp_path / 'map.png').stat().st_size > 0
    assert [name for _, name, _, _ in rows] == names
    # class 0's heat is highest in the top-left cell (row 0 = top, column 0 = left)
    heat = rows[0][3]
    assert np.unravel_index(np.argmax(heat), heat.shape) == (0, 0)
