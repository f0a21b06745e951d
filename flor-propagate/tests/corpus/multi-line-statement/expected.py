import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net


def train(model, optimizer, loader):
    for epoch in flor.loop("epoch", range(5)):
        for x, y in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            flor.log(
                "param_norms",
                {name: p.norm().item() for name, p in model.named_parameters()},
            )


train(Net(64), None, DataLoader(load_dataset()[0], batch_size=32))
