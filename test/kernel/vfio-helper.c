/*
 * vfio-helper: tiny static helper for the kernel test tier, run INSIDE the
 * QEMU guest only (busybox has no ioctl, no clock finer than a second, and
 * reports write errors without the errno name).
 *
 *   vfio-helper now                  monotonic clock in nanoseconds
 *   vfio-helper write PATH [STRING]  one write(2) of STRING (no newline added;
 *                                    no STRING = a real 0-byte write), prints
 *                                    "ok N" or "err ENAME (message)", exit 0/1
 *   vfio-helper hold GROUP [ADDR]    open /dev/vfio/vfio and /dev/vfio/GROUP,
 *                                    attach the group to a container, set the
 *                                    type1 IOMMU (what QEMU does when a VM
 *                                    starts), optionally open ADDR's device fd;
 *                                    prints one line per step and "ready", then
 *                                    holds everything until SIGTERM/SIGINT.
 *
 * Built on the host by test/kernel/run.sh with `gcc -static`; never run on
 * the host.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static const char *ename(int e) {
  const char *n = strerrorname_np(e);
  return n ? n : "E?";
}

static int step(const char *what, int rc) {
  if (rc < 0) {
    int e = errno;
    printf("%s err %s (%s)\n", what, ename(e), strerror(e));
  } else {
    printf("%s ok\n", what);
  }
  fflush(stdout);
  return rc;
}

static volatile sig_atomic_t stop;
static void on_sig(int s) { (void)s; stop = 1; }

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "now") == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    return 0;
  }
  if (argc >= 3 && strcmp(argv[1], "write") == 0) {
    const char *s = argc >= 4 ? argv[3] : "";
    int fd = open(argv[2], O_WRONLY);
    if (fd < 0) {
      int e = errno;
      printf("err %s (%s) on open\n", ename(e), strerror(e));
      return 1;
    }
    ssize_t n = write(fd, s, strlen(s));
    if (n < 0) {
      int e = errno;
      printf("err %s (%s)\n", ename(e), strerror(e));
      close(fd);
      return 1;
    }
    printf("ok %zd\n", n);
    close(fd);
    return 0;
  }
  if (argc >= 3 && strcmp(argv[1], "hold") == 0) {
    char path[64];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int container = step("open-container", open("/dev/vfio/vfio", O_RDWR));
    if (container < 0) return 1;
    printf("api-version %d\n", ioctl(container, VFIO_GET_API_VERSION));
    printf("type1v2 %d\n", ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU));
    snprintf(path, sizeof path, "/dev/vfio/%s", argv[2]);
    int group = step("open-group", open(path, O_RDWR));
    if (group < 0) return 1;
    struct vfio_group_status st = {.argsz = sizeof st};
    if (step("group-status", ioctl(group, VFIO_GROUP_GET_STATUS, &st)) == 0)
      printf("viable %d\n", (st.flags & VFIO_GROUP_FLAGS_VIABLE) ? 1 : 0);
    if (step("set-container", ioctl(group, VFIO_GROUP_SET_CONTAINER, &container)) == 0)
      step("set-iommu", ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU));
    if (argc >= 4)
      step("device-fd", ioctl(group, VFIO_GROUP_GET_DEVICE_FD, argv[3]));
    printf("ready\n");
    fflush(stdout);
    while (!stop) pause();
    printf("released\n");
    fflush(stdout);
    return 0;
  }
  fprintf(stderr, "usage: vfio-helper now | write PATH [STRING] | hold GROUP [ADDR]\n");
  return 2;
}
