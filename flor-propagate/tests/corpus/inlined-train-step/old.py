import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net


def train_step(model, optimizer, x, y):
    optimizer.zero_grad()
    out = model(x)
    loss = nn.functional.cross_entropy(out, y)
    loss.backward()
    optimizer.step()
    return loss


model = Net(128)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loader = DataLoader(load_dataset()[0], batch_size=32)
for epoch in flor.loop("epoch", range(5)):
    for x, y in flor.loop("step", loader):
        loss = train_step(model, optimizer, x, y)
        flor.log("loss", loss.item())
