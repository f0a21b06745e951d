import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

model = Net(8)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in flor.loop("epoch", range(5)):
    total = 0.0
    for x, y in DataLoader(load_dataset()[0], batch_size=2):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
        if total > 1e6:
            break
    torch.save(model.state_dict(), f"ckpt_{epoch}.pt")
