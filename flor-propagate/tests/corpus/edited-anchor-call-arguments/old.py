import flordb as flor
import torch
import torch.nn.functional as F
from torch.autograd import Variable


def evaluate(net, loader):
    net.eval()
    total = 0
    hits = 0
    for images, labels in loader:
        if use_cuda:
            images, labels = images.cuda(), labels.cuda()
        images, labels = Variable(images, volatile=True), Variable(labels)
        scores = net(images)
        total += F.nll_loss(scores, labels, size_average=False).data[0]  # summed
        guess = scores.data.max(1, keepdim=True)[1]
        hits += guess.eq(labels.data.view_as(guess)).cpu().sum()
    total /= len(loader.dataset)
    return total, hits


for epoch in flor.loop("epoch", range(10)):
    print(evaluate(model, test_loader))
