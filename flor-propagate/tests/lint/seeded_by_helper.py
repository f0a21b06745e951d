"""A helper that seeds everything (its name says so) counts as seeding:
no notes for the global generators."""
import random

import numpy as np
import torch

import flordb as flor


def set_seed(s):
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


set_seed(flor.arg("seed", 0))
model = torch.nn.Linear(4, 1)
opt = torch.optim.Adam(model.parameters())
with flor.checkpointing(model=model, optimizer=opt):
    for epoch in flor.loop("epoch", range(2)):
        x = torch.randn(16, 4)
        loss = model(x).pow(2).mean() + random.random() + np.random.rand()
        opt.zero_grad()
        loss.backward()
        opt.step()
        flor.log("loss", loss.item())
