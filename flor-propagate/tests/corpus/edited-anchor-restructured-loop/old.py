import flordb as flor
import torch


def evaluate(data_source):
    model.eval()
    total_loss = 0
    hidden = model.init_hidden(eval_batch_size)
    for i in range(0, data_source.size(0) - 1, bptt):
        data, targets = get_batch(data_source, i, evaluation=True)
        output, hidden = model(data, hidden)
        total_loss += len(data) * criterion(output.view(-1, ntokens), targets).data
        hidden = repackage_hidden(hidden)
    return total_loss[0] / len(data_source)


for epoch in flor.loop("epoch", range(args.epochs)):
    train()
    print(evaluate(val_data))
