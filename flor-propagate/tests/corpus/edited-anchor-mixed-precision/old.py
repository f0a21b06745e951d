import flordb as flor
import torch
import torch.nn as nn

from data import make_loaders
from models import build_model

train_loader, test_loader = make_loaders(batch_size=64)
model = build_model().cuda()
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

for epoch in flor.loop("epoch", range(20)):
    model.train()
    for i, (images, labels) in enumerate(train_loader):
        images, labels = images.cuda(), labels.cuda()
        outputs = model(images)
        loss = criterion(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (i + 1) % 100 == 0:
            print("epoch %d step %d loss %.4f" % (epoch + 1, i + 1, loss.item()))

    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in test_loader:
            outputs = model(images.cuda())
            correct += (outputs.argmax(1) == labels.cuda()).sum().item()
    flor.log("acc", correct / len(test_loader.dataset))
