import flordb as flor

for epoch in flor.loop("epoch", range(10)):
    loss = train_one_epoch(model, loader, optimizer)
    if epoch in (3, 6):
        for g in optimizer.param_groups:
            g["lr"] *= 0.1
    print("epoch", epoch, "loss", loss)
    save_checkpoint(model, epoch)
