import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

hidden = flor.arg("hidden", 64)
learning_rate = flor.arg("lr", 1e-2)
epochs = flor.arg("epochs", 3)

train_set, test_set = load_dataset()
loader = DataLoader(train_set, batch_size=32, shuffle=True)
net = Net(hidden)
opt = torch.optim.SGD(net.parameters(), lr=learning_rate)
criterion = nn.CrossEntropyLoss()

with flor.checkpointing(model=net, optimizer=opt):
    for epoch in flor.loop("epoch", range(epochs)):
        net.train()
        for data, target in flor.loop("step", loader):
            opt.zero_grad()
            # forward pass
            output = net(data)
            loss = criterion(output, target)
            loss.backward()
            flor.log("grad_norm", torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0).item())
            opt.step()
