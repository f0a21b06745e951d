import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

model = Net(64)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for epoch in flor.loop("epoch", range(5)):
    for x, y in DataLoader(load_dataset()[0], batch_size=32):
        optimizer.zero_grad()
        l = nn.functional.cross_entropy(model(x), y)
        l.backward()
        optimizer.step()
        flor.log("loss", l.item())
