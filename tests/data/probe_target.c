/* Calls vigil_probe_target() N times once told to go (a byte on stdin). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) int vigil_probe_target(int x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

int main(int argc, char **argv)
{
	int n = atoi(argv[1]), acc = 0;
	char go;

	if (read(0, &go, 1) != 1)
		return 2;
	for (int i = 0; i < n; i++)
		acc = vigil_probe_target(acc);
	printf("%d\n", acc);
	return 0;
}
