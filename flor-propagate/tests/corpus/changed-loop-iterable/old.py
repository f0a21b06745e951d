import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

model = Net(32)
optimizer = torch.optim.Adam(model.parameters())
loader = DataLoader(load_dataset()[0], batch_size=32)
for epoch in range(4):
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if i % 100 == 0:
            print(f"epoch {epoch} step {i}: {loss.item():.4f}")
