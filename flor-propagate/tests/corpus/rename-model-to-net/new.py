import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

hidden = flor.arg("hidden", 128)
lr = flor.arg("lr", 1e-3)
epochs = flor.arg("epochs", 5)

train_set, test_set = load_dataset()
loader = DataLoader(train_set, batch_size=32, shuffle=True)
model = Net(hidden)
optimizer = torch.optim.Adam(model.parameters(), lr=lr)
criterion = nn.CrossEntropyLoss()

with flor.checkpointing(model=model, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(epochs)):
        model.train()
        for data, target in flor.loop("step", loader):
            optimizer.zero_grad()
            output = model(data)
            loss = criterion(output, target)
            loss.backward()
            flor.log("grad_norm", torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item())
            optimizer.step()
            flor.log("loss", loss.item())
