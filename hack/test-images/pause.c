/*
 * criops pause: the process that holds a pod sandbox's namespaces open.
 *
 * It only waits. SIGINT or SIGTERM make it exit 0 at once, so a runtime stops a
 * sandbox without waiting for its kill timeout. As PID 1 of a pod's shared PID
 * namespace it inherits orphans, so it reaps every child on SIGCHLD.
 *
 * The signals are blocked and taken with sigwaitinfo() instead of handlers: the
 * kernel discards signals of default disposition sent to a PID-namespace init,
 * but never blocked ones, and there is no async-signal-safety to get wrong.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>

static void reap(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(int argc, char **argv)
{
	sigset_t set;
	int sig;

	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		puts("criops pause");
		return 0;
	}

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
		perror("pause: sigprocmask");
		return 1;
	}
	/* Zombies may have been handed to us before the mask was in place. */
	reap();

	for (;;) {
		sig = sigwaitinfo(&set, NULL);
		if (sig < 0) {
			if (errno == EINTR)
				continue;
			perror("pause: sigwaitinfo");
			return 1;
		}
		if (sig == SIGCHLD) {
			reap();
			continue;
		}
		return 0;
	}
}
