/*
 * Ballast for the benchmark's "socat with uvtep's resident size" row: preloaded into socat
 * (LD_PRELOAD), it makes the process hold UVT_BALLAST_MB megabytes of touched memory and does
 * nothing else, so that socat's round trips can be compared at the resident size of a uvtep.
 */
#include <stdlib.h>
#include <string.h>

/* Kept here so that the compiler cannot drop the allocation as unused. */
char* volatile uvt_ballast;

__attribute__((constructor)) static void ballast(void) {
  const char* mb = getenv("UVT_BALLAST_MB");
  size_t n = (size_t)(mb != NULL ? atoi(mb) : 0) << 20;
  char* p = n > 0 ? malloc(n) : NULL;
  if (p != NULL) memset(p, 1, n);  /* resident, never freed, never touched again */
  uvt_ballast = p;
}
