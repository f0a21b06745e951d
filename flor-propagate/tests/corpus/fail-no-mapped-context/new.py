import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net


def log_histograms(model):
    for name, p in model.named_parameters():
        flor.log("hist_" + name, p.detach().histc(bins=10).tolist())


model = Net(64)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for epoch in flor.loop("epoch", range(5)):
    for x, y in DataLoader(load_dataset()[0], batch_size=32):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    log_histograms(model)
