import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

net = Net(64)
opt = torch.optim.SGD(net.parameters(), lr=0.01)
for epoch in flor.loop("epoch", range(5)):
    for x, y in flor.loop("step", DataLoader(load_dataset()[0], batch_size=32)):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
