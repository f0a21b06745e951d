import flordb as flor
import torch
import torch.nn.functional as F


def evaluate(net, device, loader):
    net.eval()
    total = 0
    hits = 0
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            scores = net(images)
            total += F.nll_loss(scores, labels, reduction="sum").item()
            flor.log("eval_loss_sum", total)
            guess = scores.argmax(dim=1, keepdim=True)
            hits += guess.eq(labels.view_as(guess)).sum().item()
    total /= len(loader.dataset)
    return total, hits


for epoch in flor.loop("epoch", range(10)):
    print(evaluate(model, device, test_loader))
