#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/send_queue.h"

static int released;
static void count_release(void *arg) { released += (int)(intptr_t)arg; }

Test(send_queue, keeps_order_of_copied_and_lent_bytes)
{
    struct send_queue *queue = send_queue_new();
    cr_assert_not_null(queue);
    released = 0;
    static const char lent[] = "LENT";
    cr_assert_eq(send_queue_copy(queue, "ab", 2), 0);
    cr_assert_eq(send_queue_lend(queue, lent, 4, count_release, (void *)1), 0);
    cr_assert_eq(send_queue_copy(queue, "cd", 2), 0);
    cr_assert_eq(send_queue_length(queue), 8);

    char out[16] = {0};
    cr_assert_eq(send_queue_drain(queue, out, 3), 3);
    cr_assert_eq(released, 0, "lent bytes released before they were all consumed");
    cr_assert_eq(send_queue_drain(queue, out + 3, sizeof(out) - 3), 5);
    cr_assert_str_eq(out, "abLENTcd");
    cr_assert_eq(released, 1);
    cr_assert(send_queue_empty(queue));
    send_queue_free(queue);
}

Test(send_queue, free_releases_unsent_buffers)
{
    struct send_queue *queue = send_queue_new();
    released = 0;
    cr_assert_eq(send_queue_lend(queue, "x", 1, count_release, (void *)10), 0);
    cr_assert_eq(send_queue_lend(queue, "", 0, count_release, (void *)5), 0);
    send_queue_free(queue);
    cr_assert_eq(released, 15);
}

Test(send_queue, zero_length_lend_is_released_when_reached)
{
    struct send_queue *queue = send_queue_new();
    released = 0;
    cr_assert_eq(send_queue_copy(queue, "a", 1), 0);
    cr_assert_eq(send_queue_lend(queue, "", 0, count_release, (void *)1), 0);
    char out[4];
    cr_assert_eq(send_queue_drain(queue, out, sizeof(out)), 1);
    cr_assert_eq(released, 1);
    cr_assert(send_queue_empty(queue));
    send_queue_free(queue);
}

Test(send_queue, large_copies_and_many_entries_through_a_socket)
{
    int fds[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    struct send_queue *queue = send_queue_new();
    static uint8_t big[100000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    size_t expected = 0;
    for (int i = 0; i < 200; i++) { /* more entries than one writev takes */
        uint8_t header[3] = {(uint8_t)i, 0xaa, 0x55};
        cr_assert_eq(send_queue_copy(queue, header, sizeof(header)), 0);
        cr_assert_eq(send_queue_lend(queue, big, 1000 + i, NULL, NULL), 0);
        expected += 3 + 1000 + i;
    }
    cr_assert_eq(send_queue_copy(queue, big, sizeof(big)), 0); /* larger than a copy block */
    expected += sizeof(big);

    /* Alternate writing (until the socket is full) and reading the other end. */
    size_t received = 0;
    uint8_t buffer[65536];
    size_t check_offset = 0;
    int entry = 0;
    size_t in_entry = 0;
    while (received < expected) {
        ssize_t written = send_queue_write(queue, fds[0]);
        cr_assert(written >= 0 || written == -EAGAIN, "write failed: %zd", written);
        ssize_t n = read(fds[1], buffer, sizeof(buffer));
        cr_assert(n > 0);
        for (ssize_t i = 0; i < n; i++, check_offset++) {
            /* Verify the stream byte by byte against the pattern we queued. */
            uint8_t want;
            if (entry < 200) {
                size_t entry_len = 3 + 1000 + (size_t)entry;
                if (in_entry == 0) want = (uint8_t)entry;
                else if (in_entry == 1) want = 0xaa;
                else if (in_entry == 2) want = 0x55;
                else want = big[in_entry - 3];
                if (++in_entry == entry_len) { entry++; in_entry = 0; }
            } else {
                want = big[in_entry++];
            }
            cr_assert_eq(buffer[i], want, "byte %zu differs", check_offset);
        }
        received += (size_t)n;
    }
    cr_assert(send_queue_empty(queue));
    send_queue_free(queue);
    close(fds[0]);
    close(fds[1]);
}
