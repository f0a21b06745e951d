import flordb as flor
import torch
import torch.nn as nn


def fit(model, optimizer, loader, epochs):
    for epoch in flor.loop("epoch", range(epochs)):
        for x, y in flor.loop("step", loader):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            flor.log("loss", loss.item())
