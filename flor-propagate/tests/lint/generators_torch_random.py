"""A torch generator that reaches the loop through a DataLoader, a
random.Random drawn from in a nested loop, one seeded again every epoch
(fine), and torch's global generator (seeded: nothing to say)."""
import random

import torch
from torch.utils.data import DataLoader, TensorDataset

import flordb as flor

torch.manual_seed(0)
g = torch.Generator()  # expect: flor::uncheckpointed-generator
g.manual_seed(0)
r = random.Random(1)  # expect: flor::uncheckpointed-generator
eval_gen = torch.Generator()
aug = torch.Generator()  # seeded again each epoch below: a restart draws the same
ds = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
loader = DataLoader(ds, batch_size=8, shuffle=True, generator=g)
holdout = torch.randn(8, 4, generator=eval_gen)  # a tensor, drawn once in setup
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)

with flor.checkpointing(model=model, optimizer=opt):
    for epoch in flor.loop("epoch", range(3)):
        aug.manual_seed(1000 + epoch)
        for x, y in flor.loop("step", loader):
            x = x + 0.01 * torch.randn(x.shape, generator=aug)
            if r.random() < 0.5:
                x = x + torch.randn_like(x)
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        flor.log("holdout", float(model(holdout).mean()))
