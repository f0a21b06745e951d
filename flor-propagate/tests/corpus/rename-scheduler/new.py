import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

model = Net(64)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)
loader = DataLoader(load_dataset()[0], batch_size=32)

for epoch in flor.loop("epoch", range(30)):
    for x, y in loader:
        optimizer.zero_grad()
        loss = nn.functional.nll_loss(model(x), y)
        loss.backward()
        optimizer.step()
    scheduler.step()
    flor.log("lr", scheduler.get_last_lr()[0])
