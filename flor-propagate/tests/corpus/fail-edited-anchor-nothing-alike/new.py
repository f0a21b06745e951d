import flordb as flor

for epoch in flor.loop("epoch", range(10)):
    loss = train_one_epoch(model, loader, optimizer)
    scheduler.step(epoch)
    flor.log("lr", optimizer.param_groups[0]["lr"])
    save_checkpoint(model, epoch)
