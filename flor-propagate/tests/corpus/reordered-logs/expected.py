import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

model = Net(10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in flor.loop("epoch", range(5)):
    for x, y in DataLoader(load_dataset()[0], batch_size=8):
        optimizer.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        flor.log("acc", (logits.argmax(1) == y).float().mean().item())
        flor.log("logit_max", logits.max().item())
        flor.log("loss", loss.item())
