import flordb as flor
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from data import load_dataset
from model import Net

model = Net(512)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
loader = DataLoader(load_dataset()[0], batch_size=64)
for epoch in flor.loop("epoch", range(8)):
    for x, y in flor.loop("step", loader):
        optimizer.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        flor.log("entropy", torch.distributions.Categorical(logits=logits).entropy().mean().item())
