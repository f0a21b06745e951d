import flordb as fl
import torch

fl.log("seed", 0)
model = torch.nn.Linear(2, 2)
for epoch in fl.loop("epoch", range(3)):
    model.train()
    fl.log("epoch", epoch)
fl.log("final", 1)
