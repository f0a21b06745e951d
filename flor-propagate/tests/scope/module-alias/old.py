import flordb as fl
import torch

model = torch.nn.Linear(2, 2)
for epoch in fl.loop("epoch", range(3)):
    model.train()
