/* A Vulkan layer that lets SAPIEN 2 create its device on a driver lacking some device extensions it asks for.
 *
 * SAPIEN 2.2.2 requests device extensions for GPU interop (e.g. VK_KHR_external_semaphore_fd) that Mesa's
 * lavapipe CPU driver does not offer without /dev/udmabuf, and device creation then fails. This layer's
 * vkCreateDevice removes every requested device extension the physical device does not list and passes the
 * rest on; nothing else is intercepted. It prints what it dropped once; qdepth_dropped_extensions() and
 * qdepth_device_name() return it and the device, so the run's machine fingerprint can record them. Its JSON
 * manifest declares those extensions (the loader refuses a request for an extension that no driver or layer
 * declares before any layer runs). Enabled for SimplerEnv env workers with VK_LAYER_PATH and VK_INSTANCE_LAYERS
 * where setup found the driver lacking an extension; never on GPU machines.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vulkan/vk_layer.h>
#include <vulkan/vulkan.h>

#define EXPORT __attribute__((visibility("default")))
#define MAX_EXTENSIONS 256

static PFN_vkGetInstanceProcAddr next_instance_proc;
static PFN_vkGetDeviceProcAddr next_device_proc;
static PFN_vkEnumerateDeviceExtensionProperties next_enumerate_extensions;
static PFN_vkGetPhysicalDeviceProperties next_device_properties;
static char dropped[4096];
static char device_name[VK_MAX_PHYSICAL_DEVICE_NAME_SIZE];

EXPORT const char *qdepth_dropped_extensions(void) { return dropped; }
EXPORT const char *qdepth_device_name(void) { return device_name; }

static VKAPI_ATTR VkResult VKAPI_CALL layer_create_instance(const VkInstanceCreateInfo *info,
                                                            const VkAllocationCallbacks *allocator,
                                                            VkInstance *instance) {
  VkLayerInstanceCreateInfo *link = (VkLayerInstanceCreateInfo *)info->pNext;
  while (link && !(link->sType == VK_STRUCTURE_TYPE_LOADER_INSTANCE_CREATE_INFO && link->function == VK_LAYER_LINK_INFO))
    link = (VkLayerInstanceCreateInfo *)link->pNext;
  if (!link) return VK_ERROR_INITIALIZATION_FAILED;
  next_instance_proc = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
  link->u.pLayerInfo = link->u.pLayerInfo->pNext;
  PFN_vkCreateInstance create = (PFN_vkCreateInstance)next_instance_proc(VK_NULL_HANDLE, "vkCreateInstance");
  VkResult result = create(info, allocator, instance);
  if (result == VK_SUCCESS) {
    next_enumerate_extensions = (PFN_vkEnumerateDeviceExtensionProperties)next_instance_proc(
        *instance, "vkEnumerateDeviceExtensionProperties");
    next_device_properties =
        (PFN_vkGetPhysicalDeviceProperties)next_instance_proc(*instance, "vkGetPhysicalDeviceProperties");
  }
  return result;
}

static int offered(const VkExtensionProperties *available, uint32_t count, const char *name) {
  for (uint32_t i = 0; i < count; i++)
    if (strcmp(available[i].extensionName, name) == 0) return 1;
  return 0;
}

static VKAPI_ATTR VkResult VKAPI_CALL layer_create_device(VkPhysicalDevice physical, const VkDeviceCreateInfo *info,
                                                          const VkAllocationCallbacks *allocator, VkDevice *device) {
  VkLayerDeviceCreateInfo *link = (VkLayerDeviceCreateInfo *)info->pNext;
  while (link && !(link->sType == VK_STRUCTURE_TYPE_LOADER_DEVICE_CREATE_INFO && link->function == VK_LAYER_LINK_INFO))
    link = (VkLayerDeviceCreateInfo *)link->pNext;
  if (!link) return VK_ERROR_INITIALIZATION_FAILED;
  PFN_vkGetInstanceProcAddr instance_proc = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
  next_device_proc = link->u.pLayerInfo->pfnNextGetDeviceProcAddr;
  link->u.pLayerInfo = link->u.pLayerInfo->pNext;

  VkPhysicalDeviceProperties properties;
  next_device_properties(physical, &properties);
  memcpy(device_name, properties.deviceName, sizeof device_name);

  uint32_t count = 0;
  next_enumerate_extensions(physical, NULL, &count, NULL);
  VkExtensionProperties *available = calloc(count ? count : 1, sizeof *available);
  next_enumerate_extensions(physical, NULL, &count, available);
  const char *kept[MAX_EXTENSIONS];
  uint32_t n_kept = 0;
  int report = dropped[0] == '\0';
  for (uint32_t i = 0; i < info->enabledExtensionCount && n_kept < MAX_EXTENSIONS; i++) {
    const char *name = info->ppEnabledExtensionNames[i];
    if (offered(available, count, name)) {
      kept[n_kept++] = name;
    } else if (!strstr(dropped, name) && strlen(dropped) + strlen(name) + 2 < sizeof dropped) {
      if (dropped[0]) strcat(dropped, ",");
      strcat(dropped, name);
    }
  }
  free(available);
  if (report && dropped[0])
    fprintf(stderr, "qdepth-bench Vulkan layer: dropped device extensions the driver lacks: %s\n", dropped);

  VkDeviceCreateInfo filtered = *info;
  filtered.enabledExtensionCount = n_kept;
  filtered.ppEnabledExtensionNames = kept;
  PFN_vkCreateDevice create = (PFN_vkCreateDevice)instance_proc(VK_NULL_HANDLE, "vkCreateDevice");
  return create(physical, &filtered, allocator, device);
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL layer_device_proc(VkDevice device, const char *name);

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL layer_instance_proc(VkInstance instance, const char *name) {
  if (strcmp(name, "vkGetInstanceProcAddr") == 0) return (PFN_vkVoidFunction)layer_instance_proc;
  if (strcmp(name, "vkGetDeviceProcAddr") == 0) return (PFN_vkVoidFunction)layer_device_proc;
  if (strcmp(name, "vkCreateInstance") == 0) return (PFN_vkVoidFunction)layer_create_instance;
  if (strcmp(name, "vkCreateDevice") == 0) return (PFN_vkVoidFunction)layer_create_device;
  return next_instance_proc ? next_instance_proc(instance, name) : NULL;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL layer_device_proc(VkDevice device, const char *name) {
  if (strcmp(name, "vkGetDeviceProcAddr") == 0) return (PFN_vkVoidFunction)layer_device_proc;
  return next_device_proc ? next_device_proc(device, name) : NULL;
}

EXPORT VKAPI_ATTR VkResult VKAPI_CALL vkNegotiateLoaderLayerInterfaceVersion(VkNegotiateLayerInterface *interface) {
  if (interface->loaderLayerInterfaceVersion > 2) interface->loaderLayerInterfaceVersion = 2;
  interface->pfnGetInstanceProcAddr = layer_instance_proc;
  interface->pfnGetDeviceProcAddr = layer_device_proc;
  interface->pfnGetPhysicalDeviceProcAddr = NULL;
  return VK_SUCCESS;
}
