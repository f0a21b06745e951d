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
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        flor.log("loss", loss.item())
        optimizer.step()
