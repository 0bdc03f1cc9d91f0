/*
 * criops nnp: stands in for the nonewprivs e2e test image's program.
 *
 * Installed setuid root, it prints the effective uid it runs with: 0 when the
 * setuid bit took effect, the caller's uid when no_new_privs prevented it.
 * Static, like pause: it needs nothing from the image it is copied into.
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("Effective uid: %u\n", (unsigned)geteuid());
	return 0;
}
