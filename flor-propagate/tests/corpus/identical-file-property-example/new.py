import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

model = Net(64)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=50)
for epoch in flor.loop("epoch", range(50)):
    model.train()
    for x, y in flor.loop("step", DataLoader(load_dataset()[0], batch_size=32)):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    scheduler.step()
    flor.log("lr", scheduler.get_last_lr()[0])
    model.eval()
