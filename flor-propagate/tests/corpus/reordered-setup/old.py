import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

model = Net(flor.arg("hidden", 500))
optimizer = torch.optim.Adam(model.parameters(), lr=flor.arg("lr", 1e-3))
train_set, test_set = load_dataset()
loader = DataLoader(train_set, batch_size=32, shuffle=True)
for epoch in flor.loop("epoch", range(2)):
    for x, y in loader:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
