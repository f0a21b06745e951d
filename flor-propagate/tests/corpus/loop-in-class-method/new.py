import flordb as flor
import torch
import torch.nn as nn


class Trainer:
    def __init__(self, model, optimizer, loader):
        self.model = model
        self.optimizer = optimizer
        self.loader = loader

    def fit(self, epochs):
        for epoch in flor.loop("epoch", range(epochs)):
            for x, y in flor.loop("step", self.loader):
                self.optimizer.zero_grad()
                loss = nn.functional.cross_entropy(self.model(x), y)
                loss.backward()
                self.optimizer.step()
                flor.log("loss", loss.item())
            flor.log("epoch_done", epoch)
