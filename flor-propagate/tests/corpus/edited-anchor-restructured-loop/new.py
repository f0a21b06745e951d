import flordb as flor
import torch


def evaluate(model, loader, criterion):
    model.eval()
    total_loss = 0.0
    with torch.no_grad():
        for inputs, targets in loader:
            logits = model(inputs)
            total_loss += inputs.size(0) * criterion(logits, targets).item()
            flor.log("eval_loss", total_loss)
    return total_loss / len(loader.dataset)


for epoch in flor.loop("epoch", range(args.epochs)):
    train(model, train_loader)
    print(evaluate(model, val_loader, criterion))
