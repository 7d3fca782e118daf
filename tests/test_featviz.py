import torch

from interplab.analysis.featviz import total_variation, unit_directions, visualize
from interplab.models import ConvNet, ConvNetConfig


def test_featviz_finds_the_pixels_a_unit_reads():
    net = ConvNet(ConvNetConfig(channels1=1, channels2=1, d_fc=2), seed=0)
    with torch.no_grad():
        net.conv1.weight.zero_(); net.conv1.weight[0, 0, 1, 1] = 1.0; net.conv1.bias.zero_()
        net.conv2.weight.zero_(); net.conv2.weight[0, 0, 1, 1] = 1.0; net.conv2.bias.zero_()
        net.fc1.weight.zero_(); net.fc1.bias.zero_()
        net.fc1.weight[0, 0] = 1.0   # pool2 cell (0, 0): the top-left of the image
        net.fc1.weight[1, 24] = 1.0  # pool2 cell (4, 4): the bottom-right
    x = visualize(net, "fc1.hook_pre", unit_directions(2), steps=40, tv=0.0, l2=0.5, seed=0)
    assert x.shape == (2, 28, 28) and x.min() >= 0 and x.max() <= 1
    # max pooling passes the gradient to one pixel per window: the brightest pixels sit where each unit reads
    top_left, bottom_right = x[:, :10, :10].amax((1, 2)), x[:, 16:, 16:].amax((1, 2))
    assert top_left[0] > 0.9 and bottom_right[0] < 0.2
    assert bottom_right[1] > 0.9 and top_left[1] < 0.2
    again = visualize(net, "fc1.hook_pre", unit_directions(2), steps=40, tv=0.0, l2=0.5, seed=0)
    assert torch.equal(x, again)


def test_total_variation():
    assert total_variation(torch.zeros(2, 4, 4)).tolist() == [0.0, 0.0]
