/*
 * Ballast for the benchmark's "socat with uvtep's resident size" rows: preloaded into socat
 * (LD_PRELOAD), it makes the process hold UVT_BALLAST_MB megabytes of touched memory and does
 * nothing else, so that socat's round trips can be compared at the resident size of a uvtep.
 * With UVT_BALLAST_HUGE=1 the ballast is 2 MB aligned and asks for transparent huge pages
 * (MADV_HUGEPAGE): as many bytes, about 500 times fewer page-table entries.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Kept here so that the compiler cannot drop the allocation as unused. */
char* volatile uvt_ballast;

__attribute__((constructor)) static void ballast(void) {
  const char* mb = getenv("UVT_BALLAST_MB");
  const char* huge = getenv("UVT_BALLAST_HUGE");
  size_t n = (size_t)(mb != NULL ? atoi(mb) : 0) << 20;
  void* p = NULL;
  /* 2 MB aligned either way; 4 KB pages asked for explicitly, as THP "always" would give 2 MB */
  if (n > 0 && posix_memalign(&p, (size_t)2 << 20, n) != 0) p = NULL;
  if (p != NULL) madvise(p, n, huge != NULL && strcmp(huge, "1") == 0 ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  if (p != NULL) memset(p, 1, n); /* resident, never freed, never touched again */
  uvt_ballast = p;
}
