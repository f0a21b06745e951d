import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

train_set, val_set = load_dataset()
model = Net(64)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
for epoch in flor.loop("epoch", range(10)):
    for x, y in DataLoader(train_set, batch_size=32):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(val_set, batch_size=256):
            pred = model(x).argmax(1)
            correct += (pred == y).sum().item()
    acc = correct / len(val_set)
    flor.log("val_acc", acc)
    model.train()
