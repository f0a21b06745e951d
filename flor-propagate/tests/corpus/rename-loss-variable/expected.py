import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

model = Net(flor.arg("hidden", 32))
optimizer = torch.optim.SGD(model.parameters(), lr=flor.arg("lr", 0.01))
loader = DataLoader(load_dataset()[0], batch_size=64)

for epoch in flor.loop("epoch", range(10)):
    running = 0.0
    for x, y in loader:
        optimizer.zero_grad()
        err = nn.functional.cross_entropy(model(x), y)
        err.backward()
        optimizer.step()
        running += err.item()
        flor.log("batch_loss", err.item())
