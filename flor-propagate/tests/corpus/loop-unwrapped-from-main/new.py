import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

epochs = flor.arg("epochs", 10)
model = Net(flor.arg("hidden", 64))
optimizer = torch.optim.SGD(model.parameters(), lr=flor.arg("lr", 0.01))
criterion = nn.CrossEntropyLoss()
loader = DataLoader(load_dataset()[0], batch_size=32)

for epoch in flor.loop("epoch", range(epochs)):
    for x, y in flor.loop("step", loader):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        flor.log("weight_norm", model.fc1.weight.norm().item())
        optimizer.step()
        flor.log("loss", loss.item())
