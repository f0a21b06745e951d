import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

model = Net(32)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
loader = DataLoader(load_dataset()[0], batch_size=16)
for epoch in flor.loop("epoch", range(3)):
    for x, y in loader:
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        flor.log("grad0", model.fc1.weight.grad.abs().mean().item())
        optimizer.step()
        optimizer.zero_grad()
