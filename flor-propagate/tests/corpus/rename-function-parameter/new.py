import flordb as flor
import torch


def evaluate(model, loader):
    model.eval()
    total, correct = 0, 0
    with torch.no_grad():
        for x, y in loader:
            pred = model(x).argmax(dim=1)
            correct += (pred == y).sum().item()
            total += y.numel()
    flor.log("n_params", sum(p.numel() for p in model.parameters()))
    return correct / total
