"""Global generators drawn from but never seeded (one note per module, at
the first draw), and generators seeded from the operating system."""
import random

import numpy as np
import torch
from torch import nn

import flordb as flor

rs = np.random.RandomState()  # expect: flor::unseeded-randomness
r = random.Random(None)  # expect: flor::unseeded-randomness
g = torch.Generator()
g.manual_seed(0)  # seeds g alone, not torch's global generator
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))  # expect: flor::unseeded-randomness
data = np.random.randn(32, 4)  # expect: flor::unseeded-randomness

with flor.checkpointing(model=model, rs=rs, r=r, g=g):
    for epoch in flor.loop("epoch", range(2)):
        random.shuffle(data)  # expect: flor::unseeded-randomness
        np.random.shuffle(data)  # numpy's was reported at its first draw
        x = torch.tensor(data, dtype=torch.float32)
        flor.log("out", float(model(x).mean() + rs.normal() + r.random()))
