"""Training hands back a model in the default layout: the same ONNX graph as before training."""

import pytest
import torch

from hwprune import export
from hwprune.config import TrainConfig
from hwprune.train import train


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_trained_model_exports_the_graph_of_the_untrained_one(cnn, precision):
    data = torch.utils.data.TensorDataset(torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    example = torch.zeros(1, 1, 28, 28)
    before = [n.op_type for n in export.export(cnn, example).graph.node]
    weight = cnn.features[0].weight.detach().clone()
    snapshots = []
    train(cnn, data, TrainConfig(batch_size=32, precision=precision), 1, 0, snapshot_at=1,
          on_snapshot=snapshots.append)
    assert not torch.equal(cnn.features[0].weight, weight)  # it did train
    for model in (cnn, snapshots[0]):
        assert all(p.stride() == torch.empty(p.shape).stride() for p in model.parameters())
        assert [n.op_type for n in export.export(model, example).graph.node] == before
