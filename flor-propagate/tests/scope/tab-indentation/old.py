import flordb as flor
setup()
for epoch in flor.loop("epoch", range(3)):
	for step in flor.loop("step", range(4)):
		x = f(step)
		y = g(x)
	save()
