"""Test model with two inputs (int64 token ids and float features) and its data: several inputs of mixed dtype."""

import torch
from torch import nn
from torch.utils.data import Dataset


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 32)
        self.text = nn.Linear(32, 512)
        self.extra = nn.Linear(8, 512)
        self.hidden = nn.Linear(1024, 512)
        self.head = nn.Linear(512, 4)

    def forward(self, ids, meta):
        t = torch.relu(self.text(self.embed(ids).mean(1)))
        m = torch.relu(self.extra(meta))
        return self.head(torch.relu(self.hidden(torch.cat([t, m], 1))))


class Pairs(Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 100, (n, 12), generator=g)
        self.meta = torch.randn(n, 8, generator=g)
        self.y = (self.meta[:, :4] + (self.ids[:, :4] % 7 == 0).float()).argmax(1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return (self.ids[i], self.meta[i]), int(self.y[i])


def model():
    return TwoInputs()


def data(seed=0):
    return Pairs(2048, 1), Pairs(512, 2), Pairs(512, 3)
