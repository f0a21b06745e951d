"""Names passed to flor.checkpointing that the epoch loop rebinds, and the
ways of updating checkpointed state that are fine."""
import numpy as np
import torch

import flordb as flor

lr = flor.arg("lr", 0.1)
np.random.seed(0)
torch.manual_seed(0)
w = np.zeros(8)
b = np.zeros(8)
state = {"w": np.zeros(8)}
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=lr)
dev = "cpu"


def grad(x):
    return x * 0.5


with flor.checkpointing(w=w, b=b, state=state, model=model, optimizer=opt):
    model = model.to(dev)  # once, before the loop: the same object back anyway
    for epoch in flor.loop("epoch", range(5)):
        w = w - lr * grad(w)  # expect: flor::rebound-checkpoint
        b -= lr * grad(b)  # in place on an array: fine
        state["w"] = state["w"] - lr  # a checkpointed container updated: fine
        model = model.to(dev)  # returns the module itself: fine
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=lr / (epoch + 1))  # expect: flor::rebound-checkpoint
        w = w * 0.5  # the same name again: reported once
        flor.log("w0", float(w[0]))
    w = w / 2  # after the loop: no checkpoint follows
