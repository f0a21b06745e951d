import flordb as flor
for epoch in flor.loop("epoch", range(3)):
	for step in flor.loop("step", range(4)):
		x = f(step)
		flor.log("x", x)
		y = g(x)
	flor.log("epoch_done", epoch)
	save()
flor.log("done", 1)
