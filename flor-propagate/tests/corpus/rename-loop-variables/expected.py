import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

model = Net(256)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
train_loader = DataLoader(load_dataset()[0], batch_size=128, shuffle=True)

for epoch in flor.loop("epoch", range(flor.arg("epochs", 3))):
    for inputs, labels in flor.loop("step", train_loader):
        logits = model(inputs)
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        flor.log("batch_acc", (logits.argmax(1) == labels).float().mean().item())
